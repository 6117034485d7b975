"""Decoding: the decoder presets and the loops that run them (fast greedy, contrastive, entropy-matched
temperature, the citation blocker)."""
