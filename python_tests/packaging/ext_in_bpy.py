"""Run by test_packaging.py in a venv Python with a bpy module (5.0.1, or 4.2 LTS), with
BLENDER_USER_RESOURCES pointing at a throwaway directory:

    python ext_in_bpy.py EXTENSION_ZIP REPORT_JSON

Installs the extension zip through Blender's own operator (extensions.package_install_files,
enabled on install), with BLD_REMOTE_MCP_START_NOW=1 so the add-on starts the service, then serves
until a client thread has called get_scene_info and server_shutdown. Writes what it saw to
REPORT_JSON. The venv's own blendwire must not be the one that runs: the extension's site-packages
(where Blender unpacks the extension's wheel) is put in front of sys.path before install.
"""

import json
import os
import sys
import threading

import bpy  # first: importing bpy puts Blender's scripts/modules (addon_utils) on sys.path

# isort: split
import addon_utils

zip_path, report_path = sys.argv[1], sys.argv[2]
ext_dir = bpy.utils.user_resource("EXTENSIONS")
site = os.path.join(ext_dir, ".local", "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
os.makedirs(site, exist_ok=True)
sys.path.insert(0, site)

report = {"blender": bpy.app.version_string}
result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
report["install"] = sorted(result)
report["enabled"] = [a.module for a in bpy.context.preferences.addons if "blendwire" in a.module]

import blendwire  # noqa: E402 - the copy the add-on imported
from blendwire import blender as bw  # noqa: E402

report["blendwire_file"] = blendwire.__file__
report["site"] = site
module = "bl_ext.user_default.blendwire"
prefs = bpy.context.preferences.addons[module].preferences if module in bpy.context.preferences.addons else None
report["prefs_port"] = getattr(prefs, "port", None)
report["address"] = bw.address()
report["manifest_version"] = (
    addon_utils.module_bl_info(sys.modules[module]).get("version") if module in sys.modules else None
)

box = {}


def client():
    try:
        with blendwire.Client("127.0.0.1", int(os.environ["BLD_REMOTE_MCP_PORT"]), timeout=60) as c:
            box["scene"] = c.call("get_scene_info")
            box["shutdown"] = c.call("server_shutdown")
    except BaseException as e:
        box["error"] = repr(e)
        bw.request_stop("client failed")


if bw.is_running():
    t = threading.Thread(target=client, daemon=True)
    t.start()
    report["reason"] = bw.run_until_shutdown()
    t.join(30)
    report["scene_name"] = (box.get("scene") or {}).get("name")
    report["client_error"] = box.get("error")
with open(report_path, "w") as f:
    json.dump(report, f, default=list)
