package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// testTOTP: a step is accepted once and never an earlier one, across
// racing callers; recovery codes are single use and per user; failures
// count within a window; delete takes the recovery codes with it.
func testTOTP(t *testing.T, st store.Store) {
	ctx := t.Context()
	mustUsers(t, st, "alice", "bob")
	_, err := st.GetTOTP(ctx, "alice")
	wantErr(t, "GetTOTP before enrolment", err, store.ErrNotFound)
	wantErr(t, "UseTOTPStep before enrolment", st.UseTOTPStep(ctx, "alice", 5), store.ErrNotFound)
	a := session.TOTP{User: "alice", Secret: []byte("sealed"), LastStep: 100, Created: at(0)}
	if err := st.EnrolTOTP(ctx, a, [][]byte{hash("r1"), hash("r2")}); err != nil {
		t.Fatalf("EnrolTOTP: %v", err)
	}
	wantErr(t, "EnrolTOTP over an enrolment", st.EnrolTOTP(ctx, session.TOTP{User: "alice", Secret: []byte("other"), Created: at(0)}, nil), store.ErrExists)
	wantErr(t, "EnrolTOTP of an unknown user", st.EnrolTOTP(ctx, session.TOTP{User: "carol", Secret: []byte("x"), Created: at(0)}, nil), store.ErrNotFound)
	got, err := st.GetTOTP(ctx, "alice")
	if err != nil || string(got.Secret) != "sealed" || got.LastStep != 100 || !got.Created.Equal(a.Created) {
		t.Fatalf("GetTOTP = %+v, %v", got, err)
	}
	wantErr(t, "UseTOTPStep of the enrolment's step", st.UseTOTPStep(ctx, "alice", 100), store.ErrConflict)
	wantErr(t, "UseTOTPStep of an earlier step", st.UseTOTPStep(ctx, "alice", 99), store.ErrConflict)

	// Ten callers race with one step: one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st.UseTOTPStep(ctx, "alice", 101) == nil {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("UseTOTPStep(101) raced by 10: %d won, want 1", wins.Load())
	}

	// Failures: counted within the window, restarted after it, cleared by
	// a good code.
	for i := 1; i <= 3; i++ {
		if n, err := st.FailTOTP(ctx, "alice", at(time.Duration(i)*time.Second), time.Minute); err != nil || n != i {
			t.Errorf("FailTOTP #%d = %d, %v", i, n, err)
		}
	}
	if n, err := st.FailTOTP(ctx, "alice", at(2*time.Minute), time.Minute); err != nil || n != 1 {
		t.Errorf("FailTOTP after the window = %d, %v; want 1", n, err)
	}
	if err := st.UseTOTPStep(ctx, "alice", 102); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetTOTP(ctx, "alice"); got.Failures != 0 {
		t.Errorf("failures after a good code = %d", got.Failures)
	}

	wantErr(t, "bob using alice's recovery code", st.UseRecoveryCode(ctx, "bob", hash("r1")), store.ErrNotFound)
	if err := st.UseRecoveryCode(ctx, "alice", hash("r1")); err != nil {
		t.Fatalf("UseRecoveryCode: %v", err)
	}
	wantErr(t, "a recovery code used twice", st.UseRecoveryCode(ctx, "alice", hash("r1")), store.ErrNotFound)

	if err := st.DeleteTOTP(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetTOTP(ctx, "alice")
	wantErr(t, "GetTOTP after delete", err, store.ErrNotFound)
	if err := st.EnrolTOTP(ctx, session.TOTP{User: "alice", Secret: []byte("new"), Created: at(0)}, nil); err != nil {
		t.Fatalf("EnrolTOTP after delete: %v", err)
	}
	wantErr(t, "an old recovery code after reset", st.UseRecoveryCode(ctx, "alice", hash("r2")), store.ErrNotFound)
}

// testPendingLogin: pending logins are found by hash and taken once.
func testPendingLogin(t *testing.T, st store.Store) {
	ctx := t.Context()
	p := session.PendingLogin{Hash: hash("p1"), User: "alice", Admin: true, Method: "ldap", Groups: []string{"a", "b"}, Email: "a@x", Created: at(0), Expires: at(time.Minute)}
	if err := st.CreatePendingLogin(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := st.PendingLoginByHash(ctx, hash("p1"))
	if err != nil || got.User != "alice" || !got.Admin || got.Method != "ldap" || len(got.Groups) != 2 || got.Email != "a@x" || !got.Expires.Equal(p.Expires) {
		t.Fatalf("PendingLoginByHash = %+v, %v", got, err)
	}
	_, err = st.PendingLoginByHash(ctx, hash("p2"))
	wantErr(t, "PendingLoginByHash of another hash", err, store.ErrNotFound)
	if err := st.TakePendingLogin(ctx, hash("p1")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "TakePendingLogin twice", st.TakePendingLogin(ctx, hash("p1")), store.ErrNotFound)
	// An expired one is dropped when the next is made.
	if err := st.CreatePendingLogin(ctx, session.PendingLogin{Hash: hash("p3"), User: "bob", Created: at(0), Expires: at(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreatePendingLogin(ctx, session.PendingLogin{Hash: hash("p4"), User: "bob", Created: at(time.Hour), Expires: at(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	_, err = st.PendingLoginByHash(ctx, hash("p3"))
	wantErr(t, "an expired pending login after the next", err, store.ErrNotFound)
}
