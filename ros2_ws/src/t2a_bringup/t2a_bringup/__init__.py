"""Track2Act bringup.

launch files, parameter YAML, rviz config, the composed stack runner and environment checks.
"""
