package config

// logShutdown(c *Config) checks log.* and shutdown.*.
func (v *validator) logShutdown(c *Config) {}
