package testkit

import "github.com/wishbridge/bridge/access"

// Authorizer is the access.Authorizer of a test's decide function: decide's
// error refuses, nil admits with a Grant that names no route (a test's
// server has no config routes).
func Authorizer(decide func(access.Request) error) access.Authorizer {
	return func(req access.Request) (access.Grant, error) {
		return access.Grant{}, decide(req)
	}
}

// AllowAll admits every request.
var AllowAll = Authorizer(func(access.Request) error { return nil })
