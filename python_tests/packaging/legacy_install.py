"""Step 1 of the legacy-zip test, inside `blender -b` with a throwaway BLENDER_USER_CONFIG /
BLENDER_USER_SCRIPTS: install the zip with Blender's own operators, enable it, set the preferences
(start with Blender, the port) and save them.

    blender -b --python-exit-code 1 --python legacy_install.py -- LEGACY_ZIP PORT
"""

import sys

import bpy

zip_path, port = sys.argv[sys.argv.index("--") + 1 :][:2]
assert bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True) == {"FINISHED"}
assert bpy.ops.preferences.addon_enable(module="blendwire_addon") == {"FINISHED"}
prefs = bpy.context.preferences.addons["blendwire_addon"].preferences
prefs.port = int(port)
prefs.start_with_blender = True
assert bpy.ops.wm.save_userpref() == {"FINISHED"}
import blendwire  # noqa: E402

print("LEGACY_INSTALLED", blendwire.__file__, flush=True)
