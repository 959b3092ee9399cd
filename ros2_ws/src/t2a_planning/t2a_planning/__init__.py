"""Track2Act planning.

rigid object transforms from point tracks and depth (robust PnP), grasp and end-effector
trajectory.
"""
