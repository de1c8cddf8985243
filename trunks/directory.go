package trunks

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Store persists trunks.
type Store interface {
	Insert(ctx context.Context, t *Trunk) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context) ([]*Trunk, error)
}

// Directory answers "which trunk owns this number" from memory and keeps
// the store in step with operator changes.
type Directory struct {
	store   Store
	changed func(trunkID string)
	now     func() time.Time

	mu       sync.RWMutex
	byID     map[string]*Trunk
	byNumber map[string]*Trunk
}

// NewDirectory loads every trunk from store. changed, if not nil, hears
// of every trunk created or deleted here: other edges reload (cluster's
// change log).
func NewDirectory(ctx context.Context, store Store, changed func(trunkID string)) (*Directory, error) {
	if changed == nil {
		changed = func(string) {}
	}
	d := &Directory{store: store, changed: changed, now: func() time.Time { return time.Now().UTC() }}
	if err := d.Reload(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Reload re-reads the store (after another edge or the CLI changed it).
func (d *Directory) Reload(ctx context.Context) error {
	all, err := d.store.List(ctx)
	if err != nil {
		return err
	}
	byID, byNumber := map[string]*Trunk{}, map[string]*Trunk{}
	for _, t := range all {
		byID[t.ID] = t
		for _, n := range t.Numbers {
			byNumber[n] = t
		}
	}
	d.mu.Lock()
	d.byID, d.byNumber = byID, byNumber
	d.mu.Unlock()
	return nil
}

// Outbound finds the outbound trunk a key's call goes through: trunkID
// when given (it must be the key's), else the key's oldest outbound trunk.
// The returned trunk must not be modified.
func (d *Directory) Outbound(keyID, trunkID string) (*Trunk, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if trunkID != "" {
		t, ok := d.byID[trunkID]
		return t, ok && t.KeyID == keyID && t.Direction == Outbound
	}
	var best *Trunk
	for _, t := range d.byID {
		if t.KeyID == keyID && t.Direction == Outbound && (best == nil || t.CreatedAt.Before(best.CreatedAt) ||
			t.CreatedAt.Equal(best.CreatedAt) && t.ID < best.ID) {
			best = t
		}
	}
	return best, best != nil
}

// AllowingSource lists the inbound trunks whose allowed sources contain
// addr: a source none allows gets one answer whatever number it calls.
func (d *Directory) AllowingSource(addr netip.Addr) []*Trunk {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []*Trunk
	for _, t := range d.byID {
		if t.Direction != Outbound && t.AllowsSource(addr) {
			out = append(out, t)
		}
	}
	return out
}

// Trusted reports whether addr is inside a carrier network some inbound
// trunk names — a prefix of at least /8 (IPv4) or /32 (IPv6), not an
// "anyone" range such as 0.0.0.0/0: the flood guard never counts it.
func (d *Directory) Trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, t := range d.byID {
		for _, p := range t.AllowedSources {
			specific := p.Bits() >= 8 && p.Addr().Is4() || p.Bits() >= 32 && p.Addr().Is6()
			if specific && p.Contains(addr) {
				return true
			}
		}
	}
	return false
}

// Numbers lists the numbers of a key's inbound trunks: the caller ids its
// outbound calls may present.
func (d *Directory) Numbers(keyID string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []string
	for n, t := range d.byNumber {
		if t.KeyID == keyID {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ByNumber finds the trunk for a called number (any form NormaliseNumber
// accepts). The returned trunk must not be modified.
func (d *Directory) ByNumber(number string) (*Trunk, bool) {
	n, ok := NormaliseNumber(number)
	if !ok {
		return nil, false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.byNumber[n]
	return t, ok
}

// Get returns a trunk by id.
func (d *Directory) Get(id string) (*Trunk, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.byID[id]
	return t, ok
}

// List returns every trunk, sorted by id.
func (d *Directory) List() []*Trunk {
	d.mu.RLock()
	out := make([]*Trunk, 0, len(d.byID))
	for _, t := range d.byID {
		out = append(out, t)
	}
	d.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Create validates spec, checks its numbers are free and stores the trunk
// (the store checks that the key exists).
func (d *Directory) Create(ctx context.Context, spec Spec) (*Trunk, error) {
	t, err := spec.build(d.now())
	if err != nil {
		return nil, err
	}
	d.mu.RLock()
	for _, n := range t.Numbers {
		if other, taken := d.byNumber[n]; taken {
			d.mu.RUnlock()
			return nil, fmt.Errorf("%w: number %s belongs to trunk %s", ErrConflict, n, other.ID)
		}
	}
	d.mu.RUnlock()
	if err := d.store.Insert(ctx, t); err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.byID[t.ID] = t
	for _, n := range t.Numbers {
		d.byNumber[n] = t
	}
	d.mu.Unlock()
	d.changed(t.ID)
	return t, nil
}

// Delete removes a trunk; calls already up on it go on.
func (d *Directory) Delete(ctx context.Context, id string) error {
	if err := d.store.Delete(ctx, id); err != nil {
		return err
	}
	d.mu.Lock()
	if t, ok := d.byID[id]; ok {
		delete(d.byID, id)
		for _, n := range t.Numbers {
			if d.byNumber[n] == t {
				delete(d.byNumber, n)
			}
		}
	}
	d.mu.Unlock()
	d.changed(id)
	return nil
}
