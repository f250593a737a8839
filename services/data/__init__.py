"""The Data agent: dataset sources (server paths, archives), image-folder preparation and demo data.

Domain modules here have no gRPC or NATS imports; ``agent.py`` drives them and ``service.py`` exposes it.
"""
