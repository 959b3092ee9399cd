"""Shared helpers for the Track2Act stack.

message <-> numpy conversion (images, camera info, poses), config dataclasses and their ROS
parameter declaration, node entry-point helpers.
"""
