package broker

import "time"

// Member is a broker node as gossip sees it.
type Member struct {
	Name, Site, Addr string
	// Status is alive, suspect, dead or left.
	Status string
	// RTT is estimated from network coordinates, from the answering node.
	RTT    time.Duration
	HasRTT bool
}

// Instrument statuses. StatusUnreachable is shown for the offers of a site
// whose broker cannot be reached.
const (
	StatusAvailable   = "available"
	StatusInSession   = "in_session"
	StatusMaintenance = "maintenance"
	StatusOffline     = "offline"
	StatusUnreachable = "unreachable"
)

// Instrument is an instrument a site offers ("rutgers/krios-g4").
type Instrument struct {
	ID, Site, Type, Model, Status string
}

// ComputeTarget is a place analytics can run ("psc/bridges2-gpu").
type ComputeTarget struct {
	ID, Site, Kind string
	GPUs, GPUsFree int
	QueueWait      time.Duration
	Software       map[string]string
	Status         string
	// RTT is estimated from a site the caller named, when HasRTT.
	RTT    time.Duration
	HasRTT bool
}

// Job is what an analytics job needs: its data's site, GPUs and software
// versions ("cryosparc" → "4.6.2").
type Job struct {
	DataSite string
	GPUs     int
	Software map[string]string
}

// Placement is a compute target ranked for a job; higher Score is better.
type Placement struct {
	Target    string
	Score     float64
	RTT       time.Duration
	HasRTT    bool
	QueueWait time.Duration
	GPUsFree  int
	Reason    string
}

// Exclusion is a compute target that cannot run a job, and why.
type Exclusion struct {
	Target, Reason string
}
