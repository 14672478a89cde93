package config

// tls(c *Config) checks TLS and HTTPS listeners (tls.*, listen.https, listen.rtmps).
func (v *validator) tls(c *Config) {}
