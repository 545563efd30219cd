package admin

import "time"

// LinkRequest is the body of POST /v1/links: a shareable link to create.
type LinkRequest struct {
	Target   string `json:"target"`
	Protocol string `json:"protocol"` // ssh or rdp
	Login    string `json:"login"`
	// Valid is how long it opens sessions, a duration such as 2h or 7d
	// (at most links.max_valid).
	Valid string `json:"valid"`
	// Uses is how many sessions it opens (at most links.max_uses).
	Uses int `json:"uses"`
}

// Link is one shareable link, as GET /v1/links lists it. It never holds
// the secret.
type Link struct {
	ID        string     `json:"id"`
	Target    string     `json:"target"`
	Protocol  string     `json:"protocol"`
	Login     string     `json:"login"`
	CreatedBy string     `json:"created_by"`
	Created   time.Time  `json:"created"`
	Expires   time.Time  `json:"expires"`
	Uses      int        `json:"uses"`
	Spent     int        `json:"spent"`
	Left      int        `json:"left"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	// State is active, expired, revoked or used_up.
	State string `json:"state"`
}

// LinkCreated answers POST /v1/links: the link and its URL, which holds
// its secret and is shown this once.
type LinkCreated struct {
	Link Link   `json:"link"`
	URL  string `json:"url"`
}
