package config

// api(c *Config) checks the admin API (api.token, listen.api).
func (v *validator) api(c *Config) {}
