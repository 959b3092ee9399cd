"""Thin rclpy nodes: parameters, subscriptions, timers; the work happens in core."""
