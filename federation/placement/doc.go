// Package placement ranks the compute targets of a federation for an
// analytics job, and explains the ranking.
//
// Rank is a pure function of its arguments: no clock, no randomness, no
// dependence on map order, so every broker ranks the same offers the same
// way and tests can pin the result.
//
// # Exclusions
//
// A target that cannot run the job is left out, with every reason that
// applies: its broker is unreachable, its status is not available, it has
// too few free GPUs, or it lacks a package the job needs or runs another
// version of it. An unreachable target is reported for that alone, since
// the rest of its offer may be stale.
//
// # Software versions
//
// Job.Software maps a package to the version the job needs. A plain
// version ("4.6.2", or "=4.6.2") must equal the target's exactly, as text:
// a CryoSPARC worker must run its master's version. ">=5.0", ">5.0",
// "<=5.0" and "<5.0" compare versions component by component, numbers as
// numbers (5.10 > 5.9, 5 = 5.0). An empty version or "*" asks only that
// the package be installed. Job.Validate refuses anything else.
//
// # Score
//
// Each target that can run the job gets an estimated time to start on the
// job's data, lower being better:
//
//	estimate = Queue × queue wait
//	         + RoundTrips × RTT from the data's site to the target's
//	         + Crowding × (GPUs the job takes ÷ GPUs free)
//
// The RTT term prices moving the data (TCP's throughput falls as the RTT
// grows, and real-time feedback during a session waits on every file). The
// crowding term prefers headroom: a job that would take the last free GPUs
// is likelier to find them gone, since offers are gossiped and others
// place jobs too. A target at the data's own site has an RTT of 0.
//
// Score turns the estimate into a number where higher is better, within
// (0, 100]. Targets whose RTT is known score in (50, 100]: 100 for an
// estimate of 0, 75 for an estimate of Weights.Half. Targets whose RTT is
// unknown are estimated without the transfer and score in (0, 50], so
// they always rank after every target whose RTT is known, and their
// reasons say so. Equal scores are ordered by target ID.
package placement
