package session

import (
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	now := time.Now()
	s := &Session{ID: "s", State: Queued}
	for _, st := range []State{Starting, Ready, Stopping, Ended} {
		if err := s.Move(st, "", now); err != nil {
			t.Fatal(err)
		}
	}
	if s.Started != now || s.Ended != now {
		t.Fatalf("times not stamped: %+v", s)
	}
	for _, st := range []State{Queued, Starting, Ready, Stopping} {
		if err := s.Move(st, "", now); err == nil {
			t.Errorf("ended session moved to %s", st)
		}
	}
	if State("bogus").CanMoveTo(Ended) || Ended.Active() || !Ready.Active() {
		t.Error("bad state logic")
	}
	r := &Session{State: Ready, Started: now, Lifetime: time.Hour}
	if r.Ends() != now.Add(time.Hour) {
		t.Error("Ends")
	}
	if err := r.Move(Queued, "", now); err == nil {
		t.Error("ready went back to queued")
	}
}
