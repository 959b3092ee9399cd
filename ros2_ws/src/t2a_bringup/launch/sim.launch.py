"""The stack on t2a_sim: ``ros2 launch t2a_bringup sim.launch.py task:=box_push seed:=3``.

Thin on purpose: the nodes, parameters and remaps come from ``config/stack.yaml`` (profile
``sim``) through t2a_bringup.core.stack, exactly as ``t2a-stack sim`` starts them.
`ros2 launch t2a_bringup sim.launch.py --show-args` lists the arguments.
"""

from t2a_bringup.launch_support import launch_description


def generate_launch_description():
    return launch_description("sim")
