"""Step 2 of the legacy-zip test: a FRESH `blender -b` with the same user config, no venv on
sys.path. The add-on, enabled from the saved preferences, has started the service ("start with
Blender"); this only runs the pump, as any `-b` script must, and reports where blendwire came from.

    blender -b --python-exit-code 1 --python legacy_serve.py
"""

import sys

import blendwire
from blendwire import blender as bw

print("LEGACY_BLENDWIRE", blendwire.__file__, flush=True)
print("LEGACY_VENV_ON_PATH", any(".venv" in p for p in sys.path), flush=True)
if not bw.is_running():
    print("LEGACY_NOT_RUNNING", flush=True)
    sys.exit(4)
print("LEGACY_SERVING", bw.address()[1], flush=True)
reason = bw.run_until_shutdown()
print("LEGACY_STOPPED", reason, flush=True)
