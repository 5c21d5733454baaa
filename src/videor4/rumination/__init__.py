"""The rumination itself: decoded frames (video), the clip/crop tools (tools), the tool-call protocol
(protocol) and the trajectory format (trajectory)."""
