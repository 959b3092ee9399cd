"""Track2Act perception.

goal-conditioned diffusion transformer for point tracks, its predictor, RGB-D intake and the
set_goal service.
"""
