"""The handlers: what runs on Blender's main thread for each request the core queues there.

One module per concern, imports pointing one way (each only imports those above it):

- `inflight` (how many handlers run right now; the runtime's signal handler reads it; no bpy),
  `render_progress` (Blender's render handlers as the running job's progress), `code` (the code
  runner and output capture every dialect uses);
- `scene` (scene and object info), `screenshot` (the viewport screenshot);
- `checkpoints` (the state kept before a job that may change data), `undo` (the GUI's undo step
  per such job, and `undo_last`);
- `bld_remote` (BLD Remote's command table: the service's dispatcher, with the legacy forms),
  `blender_mcp` (blender-mcp's), `blender_lab` (Blender Lab's), `registry` (the cr8 router's
  handlers and add-on discovery);
- `keeper` (checkpoints and undo steps around each such job: the core's keeper).

Nothing is imported here, so importing one handler module loads only what it needs.
"""

__all__: list[str] = []
