"""The stack on the robot: ``ros2 launch t2a_bringup robot.launch.py spot_name:=spot``.

Thin on purpose: the nodes, parameters and remaps come from ``config/stack.yaml`` (profile
``robot``) through t2a_bringup.core.stack, exactly as ``t2a-stack robot`` starts them.
`ros2 launch t2a_bringup robot.launch.py --show-args` lists the arguments.
"""

from t2a_bringup.launch_support import launch_description


def generate_launch_description():
    return launch_description("robot")
