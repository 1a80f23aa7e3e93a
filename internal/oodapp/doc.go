// Package oodapp holds the tests of the Open OnDemand interactive app in
// contrib/ood/airlock: its ERB files rendered by Debian's ruby the way
// OnDemand renders them, its job run for real by the Slurm test cluster
// through a stand-in for OnDemand's basic template, and the session reached
// through nginx configured as OnDemand's /rnode/HOST/PORT/ proxy. OnDemand
// itself is not packaged for Debian and does not run here. The package has
// no code of its own.
package oodapp
