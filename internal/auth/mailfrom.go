package auth

import (
	"context"
	"strings"
)

// MailFromTemplate gives the users of a password authenticator that knows
// no addresses (the local password file) one made from their name:
// Template with {user} replaced, such as "{user}@example.org", so they can
// ask for ready e-mails. User names are restricted to [a-z0-9._-]
// (ValidateUserName), so the result is a plain address when the template
// is one.
type MailFromTemplate struct {
	PasswordAuthenticator
	Template string
}

// Authenticate is the wrapped authenticator's, with Email filled in when
// it gave none.
func (m MailFromTemplate) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	id, err := m.PasswordAuthenticator.Authenticate(ctx, user, password)
	if err == nil && id.Email == "" && m.Template != "" {
		id.Email = strings.ReplaceAll(m.Template, "{user}", id.User)
	}
	return id, err
}
