"""graft.envs.robot: the robot side of the policy server.

codec (msgpack + numpy), protocol (handshake, messages, observation checks), client (sync
websocket client with deadlines and reconnect backoff), controllers (the controller protocol, any
gymnasium env, the MuJoCo reach arm's joint controller), control_loop (fixed rate, action
chunking, clamping, watchdog). The server side is `graft.agent.serve`.
"""
