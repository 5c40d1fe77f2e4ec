// Package boxtable draws tables with box-drawing characters, for the
// programs' terminal output.
package boxtable

import (
	"io"
	"strings"
	"unicode/utf8"
)

// Draw writes header and rows in a box. Columns named in right are
// right-aligned (numbers), the others left-aligned; headers are always
// left-aligned. A row shorter than the header gets empty cells.
func Draw(w io.Writer, header []string, rows [][]string, right map[int]bool) error {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(widths) {
				widths[i] = max(widths[i], utf8.RuneCountInString(c))
			}
		}
	}
	var b strings.Builder
	rule := func(left, mid, end string) {
		b.WriteString(left)
		for i, wd := range widths {
			if i > 0 {
				b.WriteString(mid)
			}
			b.WriteString(strings.Repeat("─", wd+2))
		}
		b.WriteString(end + "\n")
	}
	line := func(cells []string, header bool) {
		b.WriteString("│")
		for i, wd := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			pad := strings.Repeat(" ", wd-utf8.RuneCountInString(c))
			if header || !right[i] {
				b.WriteString(" " + c + pad + " │")
			} else {
				b.WriteString(" " + pad + c + " │")
			}
		}
		b.WriteString("\n")
	}
	rule("┌", "┬", "┐")
	line(header, true)
	rule("├", "┼", "┤")
	for _, r := range rows {
		line(r, false)
	}
	rule("└", "┴", "┘")
	_, err := io.WriteString(w, b.String())
	return err
}
