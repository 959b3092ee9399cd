"""Track2Act simulation.

MuJoCo Spot-arm scene and tasks, scripted expert, data generation, and a drop-in for the
realsense2_camera and spot_ros2 interfaces.
"""
