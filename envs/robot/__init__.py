"""graft.envs.robot: the robot side of the policy server (the server side is `graft.agent.serve`).

codec (msgpack + numpy), protocol (handshake, messages, observation checks), client (sync
websocket client with deadlines and reconnect backoff), controllers (the controller protocol, any
gymnasium env, the MuJoCo reach arm's joint controller), control_loop (fixed rate, action
chunking, clamping, watchdog); ros2/, the ROS 2 bridge (optional extra `graft[ros2]`, the only
place rclpy is imported).
"""
