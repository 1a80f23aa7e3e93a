// Package contract is the typed session contract between the gateway side
// (gateway, backends) and the runner side (runner, connector): the spec
// the gateway asks a runner to start ([Spec], [ConnectorSpec]), the events
// the runner reports and every backend passes on ([Event], [EventKind]),
// the secrets a runner hands each connector ([ConnectorSecrets]), and the
// one registry of connector kinds ([KindInfo], [Lookup]).
//
// It is a leaf: it imports only the standard library, so both sides import
// it and neither imports the other. Names are typed constants, so renaming
// a kind, an event or a well-known connector is a compile error on both
// sides, not a string that silently stops matching.
//
// # Adding a connector kind
//
// A connector kind is declared once, in kinds.go: its name, what it needs
// from the spec (a ticket key, a client CA, whether it may answer a VNC
// password), whether the session waits for its target, and how the gateway
// shows it to a browser. The runner's spec validation, the secrets it
// hands the connector, its readiness probes and the gateway's session page
// all read that entry; none of them switch on a kind's name. Then:
//
//  1. contract/kinds.go: add the ConnectorKind constant and its KindInfo.
//  2. Runner side, connector/<kind>.go: the kind's server, listed in
//     connector's serve table (connector.go refuses a registered kind that
//     has no server, and TestEveryKindHasAServer fails).
//  3. Gateway side, the profile kind that uses it in gateway/sessions.go
//     (or vm.go): the ConnectorSpec it puts in the spec, and, when its
//     KindInfo.View is new, how the session page opens it (web.go).
//  4. Tests: the kind's own in connector/, and a row in the gateway's
//     contract test (TestContract), which proves the spec the gateway
//     builds is one the runner accepts and the runner's events are ones
//     the gateway understands, for every profile kind and backend.
package contract
