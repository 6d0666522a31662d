package lb

// ids allocates the frontend entries' IDs: never 0, unique among the
// node's entries. It hands them out in turn (wrapping), so a released ID
// is reused as late as possible: the connection tracker may still hold
// flows of the entry that had it.
type ids struct {
	used map[uint32]bool
	last uint32
}

func newIDs() ids { return ids{used: map[uint32]bool{}} }

// use marks an ID found in the maps as taken.
func (s *ids) use(id uint32) {
	s.used[id] = true
	s.last = max(s.last, id)
}

// alloc returns a free ID. The node holds far fewer than 2^32-1 entries,
// so one is always found.
func (s *ids) alloc() uint32 {
	for {
		s.last++
		if s.last != 0 && !s.used[s.last] {
			s.used[s.last] = true
			return s.last
		}
	}
}

// release frees an ID.
func (s *ids) release(id uint32) { delete(s.used, id) }
