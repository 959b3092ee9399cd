"""Track2Act control.

Spot arm kinematics and IK, the residual policy, the 5 Hz control loop, safety filter and driver
backends.
"""
