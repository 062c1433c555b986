"""graft.envs.robot: the robot side of the policy server.

codec (msgpack + numpy), protocol (handshake, messages, observation checks), client (sync
websocket client with deadlines and reconnect backoff), controllers (the controller protocol, any
gymnasium env, the MuJoCo reach arm's joint controller), control_loop (fixed rate, action
chunking, clamping, watchdog). The server side is `graft.agent.serve`.

ros2/ (optional extra `graft[ros2]`; the only place rclpy is imported): convert (messages <->
numpy, image encodings, user converters), sync (latest message per topic, staleness), runtime
(context, node, executor, QoS), policies (in-process policy behind the client interface, the
reach expert), bridge (the bridge node over the control loop), sim_node (the MuJoCo arm as a ROS 2
node), reach_converters (example user converters).
"""
