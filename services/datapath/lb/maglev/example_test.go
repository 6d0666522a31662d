package maglev_test

import (
	"fmt"

	"github.com/axon-cni/axon/services/datapath/lb/maglev"
)

// A service's backends, one of them given twice the weight: the table gives
// it twice the entries, so twice the new flows.
func ExampleTable() {
	backends := []maglev.Backend{
		{Key: "10.0.2.17:8080/TCP"},
		{Key: "10.0.3.4:8080/TCP"},
		{Key: "10.0.9.1:8080/TCP", Weight: 2},
	}
	table, err := maglev.Table(backends, maglev.DefaultSize)
	if err != nil {
		fmt.Println(err)
		return
	}
	counts := make([]int, len(backends))
	for _, i := range table {
		counts[i]++
	}
	for i, b := range backends {
		fmt.Printf("%s: %d entries\n", b.Key, counts[i])
	}
	// The datapath hashes a flow to an entry, here the first:
	fmt.Println("entry 0:", backends[table[0]].Key)
	// Output:
	// 10.0.2.17:8080/TCP: 4095 entries
	// 10.0.3.4:8080/TCP: 4095 entries
	// 10.0.9.1:8080/TCP: 8191 entries
	// entry 0: 10.0.9.1:8080/TCP
}
