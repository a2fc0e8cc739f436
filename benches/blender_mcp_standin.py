"""STAND-IN for the blender-mcp (ahujasid) add-on's dispatch — NOT the real add-on (its file is not
on PyPI). Used only by benches/bench.py, in GUI Blender (`blender --python THIS`, port from
$BENCH_STANDIN_PORT).

It reproduces the add-on's dispatch as its source does it: one server socket served by
a thread; one thread per client that reads until the bytes parse as JSON, then, for every command,
`bpy.app.timers.register(wrapper, first_interval=0.0)` from that client thread; the wrapper runs
the command on Blender's main thread and sends the JSON response from the main thread
(`client.sendall`). Commands: get_scene_info, execute_code (stdout captured, returned as
{"executed": true, "result": stdout}).
"""

import io
import json
import os
import socket
import threading
import traceback
from contextlib import redirect_stdout

import bpy


def get_scene_info():
    scene = bpy.context.scene
    info = {
        "name": scene.name,
        "object_count": len(scene.objects),
        "objects": [],
        "materials_count": len(bpy.data.materials),
    }
    for i, obj in enumerate(scene.objects):
        if i >= 10:
            break
        info["objects"].append(
            {
                "name": obj.name,
                "type": obj.type,
                "location": [
                    round(float(obj.location.x), 2),
                    round(float(obj.location.y), 2),
                    round(float(obj.location.z), 2),
                ],
            }
        )
    return info


def execute_code(code):
    namespace = {"bpy": bpy}
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(code, namespace)
    return {"executed": True, "result": buf.getvalue()}


HANDLERS = {"get_scene_info": lambda p: get_scene_info(), "execute_code": lambda p: execute_code(p.get("code", ""))}


def execute_command(command):
    try:
        handler = HANDLERS.get(command.get("type"))
        if handler is None:
            return {"status": "error", "message": f"Unknown command type: {command.get('type')}"}
        return {"status": "success", "result": handler(command.get("params", {}))}
    except Exception as e:
        traceback.print_exc()
        return {"status": "error", "message": str(e)}


def handle_client(client):
    client.settimeout(None)
    buffer = b""
    try:
        while True:
            data = client.recv(8192)
            if not data:
                break
            buffer += data
            try:
                command = json.loads(buffer.decode("utf-8"))
            except ValueError:
                continue
            buffer = b""

            def execute_wrapper(command=command):
                try:
                    response = execute_command(command)
                    client.sendall(json.dumps(response).encode("utf-8"))
                except Exception:
                    traceback.print_exc()
                return None  # one-shot timer

            bpy.app.timers.register(execute_wrapper, first_interval=0.0)
    except OSError:
        pass
    finally:
        try:
            client.close()
        except OSError:
            pass


def server_loop(sock):
    while True:
        client, _addr = sock.accept()
        threading.Thread(target=handle_client, args=(client,), daemon=True).start()


def main():
    port = int(os.environ.get("BENCH_STANDIN_PORT", "9876"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    threading.Thread(target=server_loop, args=(sock,), daemon=True).start()
    print(f"blender-mcp-standin: serving on 127.0.0.1:{port}", flush=True)


main()
