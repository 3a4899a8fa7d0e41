"""killswitch: an emergency kill-switch control plane for AI model access."""
