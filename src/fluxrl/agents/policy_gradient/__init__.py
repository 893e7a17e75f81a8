"""Policy gradient (paper Table 1, last row): PPO's clipped surrogate with a surrogate likelihood
ratio for a generative policy; the reference policy is the previous iterate."""
