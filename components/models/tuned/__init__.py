"""Tuned models: a pre-trained encoder wrapped by a tuning method (fine-tuning, PPR, CPL, PoMRec), with the user
profiles and prompt insertion they share.  Models only; how they are tuned is ``components.tuning``."""
