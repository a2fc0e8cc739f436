"""mesh_rows: a tiny add-on, the example of blendwire's pytest plugin.

One operator, `bpy.ops.mesh_rows.add_row(count=3, spacing=2.5)`, adds a row of cubes along X; one
function without bpy, `row_positions`, says where they go.
"""

import bpy

bl_info = {
    "name": "Mesh rows",
    "blender": (3, 0, 0),
    "category": "Object",
    "description": "Add a row of cubes",
}


def row_positions(count, spacing):
    """The X positions of `count` cubes, `spacing` apart, centred on 0."""
    start = -spacing * (count - 1) / 2
    return [start + i * spacing for i in range(count)]


class MESH_ROWS_OT_add_row(bpy.types.Operator):
    """Add a row of cubes along X"""

    bl_idname = "mesh_rows.add_row"
    bl_label = "Add Row of Cubes"
    bl_options = {"REGISTER", "UNDO"}

    count: bpy.props.IntProperty(name="Count", default=3, min=1, max=100)
    spacing: bpy.props.FloatProperty(name="Spacing", default=2.5, min=0.0)

    def execute(self, context):
        for i, x in enumerate(row_positions(self.count, self.spacing)):
            bpy.ops.mesh.primitive_cube_add(location=(x, 0.0, 0.0))
            context.view_layer.objects.active.name = f"Row.{i:03d}"
        return {"FINISHED"}


def register():
    bpy.utils.register_class(MESH_ROWS_OT_add_row)


def unregister():
    bpy.utils.unregister_class(MESH_ROWS_OT_add_row)
