from .bridges import BRIDGES, build_bridge

__all__ = ["BRIDGES", "build_bridge"]
