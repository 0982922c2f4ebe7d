package ratelimit

import (
	"sync"
	"time"
)

// A Limiter is paid for the bytes a reader has read; Pay returns once the reader may read again.
type Limiter interface {
	Pay(n int) error
}

// burst is how long the bucket may save tokens for while nobody reads; maxSleep is the longest a payer
// sleeps before it looks at the bucket again, so that a new rate applies at once.
const (
	burst    = 200 * time.Millisecond
	maxSleep = 50 * time.Millisecond
)

// Bucket is a token bucket of bytes. Payments are taken whole, and a payment that takes it below zero
// makes its payer wait until it is back at zero: over any window the bytes paid for are at most the rate
// times the window plus the burst, plus one payment per payer.
type Bucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0: unlimited
	tokens float64
	paid   int64 // every byte paid for, at any rate
	last   time.Time
	now    func() time.Time
	sleep  func(time.Duration)
}

// NewBucket returns a bucket at rate bytes per second (0: unlimited), empty.
func NewBucket(rate int64) *Bucket {
	return &Bucket{rate: float64(rate), last: time.Now(), now: time.Now, sleep: time.Sleep}
}

// SetRate changes the rate (0: unlimited) from the next look at the bucket. Debt taken at the old rate is
// repaid at the new one.
func (b *Bucket) SetRate(rate int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	b.rate = float64(rate)
	if rate == 0 {
		b.tokens = 0
	}
}

// Rate returns the rate in force, in bytes per second.
func (b *Bucket) Rate() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(b.rate)
}

// Paid returns the bytes paid for so far.
func (b *Bucket) Paid() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paid
}

func (b *Bucket) refill() {
	now := b.now()
	if b.rate > 0 {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if limit := b.rate * burst.Seconds(); b.tokens > limit {
			b.tokens = limit
		}
	}
	b.last = now
}

// Pay takes n bytes from the bucket and waits until the bucket is no longer in debt.
func (b *Bucket) Pay(n int) error {
	b.mu.Lock()
	b.paid += int64(n)
	b.refill()
	if b.rate == 0 {
		b.mu.Unlock()
		return nil
	}
	b.tokens -= float64(n)
	for b.rate > 0 && b.tokens < 0 {
		d := time.Duration(-b.tokens / b.rate * float64(time.Second))
		b.mu.Unlock()
		b.sleep(min(d, maxSleep) + time.Millisecond/10)
		b.mu.Lock()
		b.refill()
	}
	b.mu.Unlock()
	return nil
}
