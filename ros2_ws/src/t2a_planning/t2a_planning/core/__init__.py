"""ROS-free core: numpy/torch/scipy only, never rclpy or message packages.

Entry point for the node: :func:`t2a_planning.core.planner.plan_from_tracks` (tracks + depth +
extrinsics + hand pose -> :class:`t2a_planning.core.ee_plan.Plan`). The steps on their own:
``lifting.lift_points`` (P0 to 3D), ``rigid.estimate_object_motion`` (T_cam_obj_t per step),
``ee_plan.build_ee_plan`` and ``ee_plan.sample_trajectory`` (hand poses, timing, reachability).
``synthetic.make_scene`` builds test scenes with known motion.
"""
