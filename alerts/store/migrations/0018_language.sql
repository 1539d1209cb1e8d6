-- A person's language for the page: zh-CN or en; null follows the browser's.
ALTER TABLE people ADD COLUMN language text CHECK (language IN ('zh-CN', 'en'));
