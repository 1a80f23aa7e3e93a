package runner

import "encoding/json"

func marshalSpec(s *Spec) ([]byte, error) { return json.Marshal(s) }
