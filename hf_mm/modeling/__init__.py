from .bridges import BRIDGES, Bridge, build_bridge, get_bridge, register_bridge

__all__ = ["BRIDGES", "Bridge", "build_bridge", "get_bridge", "register_bridge"]
