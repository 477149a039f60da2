"""The node agent: containers under runc, images, leases, devices, networks, exec."""
