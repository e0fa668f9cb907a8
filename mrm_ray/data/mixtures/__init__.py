"""Named mixtures shipped with mrm-ray (YAML files loadable by name)."""
