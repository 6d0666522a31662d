package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// MaglevTableSize is the number of entries of a frontend entry's Maglev
// table (AXON_MAGLEV_SIZE): the programs hash a new connection to one.
const MaglevTableSize = 16381

// lbFlagMaglev is AXON_LB_F_MAGLEV.
const lbFlagMaglev = 2

func maglevKey(id uint32, gen uint8) podAxonLbMaglevKey {
	return podAxonLbMaglevKey{ServiceId: id, Gen: gen}
}

// putMaglev writes the Maglev table of entry id's generation gen.
func (o *Objects) putMaglev(id uint32, gen uint8, table []uint16) error {
	var v podAxonLbMaglev
	copy(v.Slot[:], table)
	k := maglevKey(id, gen)
	if err := o.maps.AxonLbMaglev.Put(&k, &v); err != nil {
		return fmt.Errorf("write Maglev table: %w", err)
	}
	return nil
}

func (o *Objects) deleteMaglev(id uint32, gen uint8) {
	k := maglevKey(id, gen)
	_ = o.maps.AxonLbMaglev.Delete(&k) // missing: nothing to do
}

// maglev reads the Maglev table of entry id's generation gen.
func (o *Objects) maglev(id uint32, gen uint8) ([]uint16, error) {
	var v podAxonLbMaglev
	k := maglevKey(id, gen)
	if err := o.maps.AxonLbMaglev.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("Maglev table of service %d generation %d missing", id, gen)
		}
		return nil, fmt.Errorf("read Maglev table: %w", err)
	}
	return v.Slot[:], nil
}
