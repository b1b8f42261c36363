"""ivs: an intelligent vision sensor in software.

Frames in, an int8 model on every frame, only metadata out.
"""

__version__ = "0.1.0"
