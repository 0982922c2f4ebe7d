package listing

import (
	"sort"

	"github.com/pgbb/pgbb/internal/worklist"
)

// groupLines arranges items, in their order so far (shuffled), so that every run of per consecutive lines
// of the list, the trailer being its last line, carries about the same bytes, where per is
// ceil(lines/groups) as the fan-outs are given it (the script's xargs -n and parallel -N). A fan-out
// hands each run to one job, and a job's share of bytes is its time on a link of one flow each: with the
// runs random, some jobs drew several times the bytes of others and ran alone at the end (issue 17's
// timeline). The biggest items are placed first, each into the run with the fewest bytes that has room
// (longest processing time first); within a run the items keep their order.
func groupLines(items []worklist.Item, groups int) []worklist.Item {
	lines := len(items) + 1 // the trailer
	if groups <= 1 || lines <= groups {
		return items
	}
	per := (lines + groups - 1) / groups
	n := (lines + per - 1) / per
	room := make([]int, n)
	for g := range room {
		room[g] = per
	}
	room[n-1] = lines - (n-1)*per - 1 // the trailer ends the last run
	bytes := make([]int64, n)
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return items[order[a]].Length > items[order[b]].Length })
	group := make([]int, len(items))
	for _, i := range order {
		best := -1
		for g := range room {
			if room[g] > 0 && (best < 0 || bytes[g] < bytes[best]) {
				best = g
			}
		}
		group[i] = best
		room[best]--
		bytes[best] += items[i].Length
	}
	// within a run the items keep their order
	runs := make([][]worklist.Item, n)
	for i, it := range items {
		runs[group[i]] = append(runs[group[i]], it)
	}
	out := make([]worklist.Item, 0, len(items))
	for _, run := range runs {
		out = append(out, run...)
	}
	return out
}
