"""The endpoint gateway: services' endpoints served over HTTPS to browsers and API clients."""
