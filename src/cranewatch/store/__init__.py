"""SQLite store: schema, named migrations, the single writer. Only this package writes SQL."""
