package config

// httpFront(h *HTTP) checks http.trusted_proxies.
func (v *validator) httpFront(h *HTTP) {}
