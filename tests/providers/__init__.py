"""Provider plugins, the provider conformance kit, cloud-init bootstrap."""
