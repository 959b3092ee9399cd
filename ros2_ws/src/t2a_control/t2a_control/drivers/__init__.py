"""ArmDriver backends that need ROS or a robot SDK (the protocol and the fake live in core)."""
