package client

import "testing"

func TestIsRead(t *testing.T) {
	tests := []struct {
		method string
		want   bool
	}{
		{"/labfed.v1.DirectoryService/ListSites", true},
		{"/labfed.v1.DirectoryService/GetAccount", true},
		{"/labfed.v1.ClusterService/Status", true},
		{"/labfed.v1.ClusterService/ListPeers", true},
		{"/labfed.v1.DirectoryService/AddGrant", false},
		{"/labfed.v1.DirectoryService/PinAccount", false},
		{"/labfed.v1.ClusterService/Join", false},
		{"/labfed.v1.ClusterService/Snapshot", false},
	}
	for _, test := range tests {
		if got := IsRead(test.method); got != test.want {
			t.Errorf("IsRead(%q) = %v, want %v", test.method, got, test.want)
		}
	}
}
