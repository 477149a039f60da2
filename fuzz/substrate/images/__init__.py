"""The node's image store: ``docker://`` references pulled by digest and unpacked once.

:mod:`~fuzz.substrate.images.reference` parses references and holds the image errors,
:mod:`~fuzz.substrate.images.pull` runs ``skopeo`` and ``umoci``,
:mod:`~fuzz.substrate.images.layout` reads OCI layouts and sizes trees, and
:mod:`~fuzz.substrate.images.store` keeps the images, their use and their eviction.
"""
