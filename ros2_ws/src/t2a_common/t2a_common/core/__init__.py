"""ROS-free core: numpy/torch/scipy only, never rclpy or message packages."""
